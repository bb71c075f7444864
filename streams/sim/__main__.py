"""``python -m streams.sim``: see streams.sim.runner.main."""

from streams.sim.runner import main

main()
