"""Several routers as one: the slots of each replica split among the routers, and handed over.

(The design essay is completed with the peer port and membership.)
"""
