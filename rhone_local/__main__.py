from rhone_local.server import main

raise SystemExit(main())
