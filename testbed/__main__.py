from testbed.main import main

main()
