from orch.manager.main import main

main()
