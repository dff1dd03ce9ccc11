#compdef rhone

_rhone_completion() {
  eval "$(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _RHONE_COMPLETE=complete_zsh rhone 2>/dev/null)"
}

compdef _rhone_completion rhone
