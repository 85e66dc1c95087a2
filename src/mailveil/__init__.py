"""mailveil: the customer-contact firewall for online marketplaces."""

__version__ = "0.1.0"
