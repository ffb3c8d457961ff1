from bitexport.cli import main

raise SystemExit(main())
