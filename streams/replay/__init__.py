"""Re-running recorded readings through the worker's pipeline (issue 12; the
`cityops replay` command is still to come).

- source.py: the archive's rows -> the Kafka messages they came from, in Kafka order
- engine.py: messages -> alarms, through the same decoder, detectors and routes
"""
