"""Commands: any agent command by type, waited for or in the background, and their stored outcome."""
