from .views import EchoView, HelloView, broadcast, echo

routes = {
    "/": HelloView,
    "/echo": EchoView,
}

ws_rules = {
    "echo": echo,
    "broadcast": broadcast,
}
