"""taskology.tasks"""
