from s2s_tasks.cli import main

main()
