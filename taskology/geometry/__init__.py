"""taskology.geometry"""
