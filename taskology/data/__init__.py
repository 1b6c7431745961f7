"""taskology.data"""
