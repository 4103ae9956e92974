from orch.agent.main import main

main()
