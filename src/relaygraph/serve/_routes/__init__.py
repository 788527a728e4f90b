"""HTTP routers, one module per resource; each exposes ``router: APIRouter``.

`relaygraph.serve.create_app` includes the ``router`` of every module found here.
"""
