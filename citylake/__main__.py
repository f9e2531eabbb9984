from citylake.cli import main

main()
