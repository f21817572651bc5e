from localrag.cli import app

app()
