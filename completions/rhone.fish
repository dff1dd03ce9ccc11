complete --command rhone --no-files --keep-order --arguments "(env _RHONE_COMPLETE=complete_fish \
_TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) rhone 2>/dev/null)" --condition "env \
_RHONE_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args _TYPER_COMPLETE_ARGS=(commandline -cp) rhone \
2>/dev/null"
