from rhone_cli.entry import run

run()
