"""Operating mailveil: metrics, alerts (signed webhooks), the doctor's checks."""
