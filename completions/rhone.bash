_rhone_completion() {
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _RHONE_COMPLETE=complete_bash $1 2>/dev/null ) )
    return 0
}

complete -o default -o nosort -F _rhone_completion rhone 2>/dev/null || complete -o default -F _rhone_completion rhone
