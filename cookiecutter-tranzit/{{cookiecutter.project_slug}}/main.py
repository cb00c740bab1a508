"""Start the project: HTTP and the websocket server, as server.yml configures them.

``python main.py`` does the same as ``tranzit run`` in this directory.
"""

import os

from tranzit.web import MainServer

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    MainServer("server.yml", PROJECT_DIR).run()
