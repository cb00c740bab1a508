from tranzit.cli import main

raise SystemExit(main())
