"""taskology.losses"""
