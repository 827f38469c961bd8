"""SQLite storage for the supervisor: connections, migrations, the batching writer and the SQL repos (store/repos/)."""
