"""Customers, principals, relationships (orders, support cases), aliases and disclosures.

Import the submodules; nothing is imported here so that ``mailveil.contacts.models`` stays
cheap and free of import cycles.
"""
