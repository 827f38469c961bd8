"""All SQL of the supervisor, one module per table (or job). Plain functions over a connection:
writers run them inside the Writer's transaction, readers through the Reader. Imports only core and store."""
