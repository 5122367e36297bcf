from mailwarden.cli import entry

entry()
