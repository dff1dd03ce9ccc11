import sys

if sys.argv[1:2] == ["edge"]:  # an edge process loads the relay only, not the API
    from rhone_local.edge_process import main

    raise SystemExit(main(sys.argv[2:]))

from rhone_local.server import main

raise SystemExit(main())
