from appfirst.cli import main

main()
