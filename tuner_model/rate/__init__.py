"""Rate control: what a caller asks (request.py), the efforts as presets of phases (effort.py) and the plan
resolved from both (plan.py), all pure data; the rate-control table (table.py, table.json); the level search
(levels.py); a plan's phases on K images (pipeline.py); the one entry, quality targets included (encode.py).
The API imports request, effort, plan and table only: this package's __init__ imports nothing, so that they
load without torch."""
