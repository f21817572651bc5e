from localrag.cli.app import app

app()
