"""Employee access: contact lookups, bounded lists and exports salted with canaries,
break-glass reveals with N-of-M approval, suspension, and the customer-visible access log.

Why its own area (the design puts reveals under contacts/): everything here is about what one
employee may see and how that is limited and recorded; contacts/ stays the data it reads.
"""
