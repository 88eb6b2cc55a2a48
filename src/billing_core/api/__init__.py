"""HTTP shaping for the partner API (Chalice): claims -> identity, body -> model, errors -> status."""
