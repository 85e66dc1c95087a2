"""Detection: signals (strangers at aliases, canary hits, abuse reports, access anomalies),
attribution (exact by alias, ranked by guilt for real addresses), incidents and evidence
bundles a third party can verify without the database."""
