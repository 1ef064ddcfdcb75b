"""Personas over HTTP and on the page: the request and status models (:mod:`.protocol`), what a persona
is now (:mod:`.status`), the changes (:mod:`.actions`) and the router that dispatches to them
(:mod:`.routes`). Nothing is imported here, so a module needing only the models pulls in no route.
"""
