from bitexport.train.cli import main

raise SystemExit(main())
