from imgrade.cli import main

raise SystemExit(main())
