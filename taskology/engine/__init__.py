"""taskology.engine"""
