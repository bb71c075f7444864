"""The readings archive: every reading and dead letter in Parquet, beyond Kafka's retention.

- rows.py: decoded readings and dead-letter records -> Arrow tables
- store.py: Hive-partitioned Parquet files (kind / UTC day / hour), retention
- consumer.py: `cityops archive run`, a consumer group of its own
- query.py: `cityops archive query`, DuckDB views over the files
"""
