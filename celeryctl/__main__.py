from celeryctl.cli import main

main()
