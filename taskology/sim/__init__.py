"""taskology.sim"""
