"""Rate control: what a caller asks (request.py) and how much fitting it gets (effort.py), both pure data;
the rate-control table (table.py, table.json); the level search (levels.py); the encode at one rate
(pipeline.py); quality targets (encode.py) and batches (batch.py). The API imports request, effort and
table only: this package's __init__ imports nothing, so that they load without torch."""
