"""taskology.cluster"""
