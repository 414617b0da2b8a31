"""Who may do what: API keys and tenants (keys.py), signed render URLs (signing.py) and per-tenant request
rates (ratelimit.py). No web framework here: the API's dependencies and the CLI both use these."""
