from obskit.cli import main

raise SystemExit(main())
