from .views import EchoView, HelloView, broadcast, echo, echo_2018

routes = {
    "/": HelloView,
    "/echo": EchoView,
}

ws_rules = {
    "echo": echo,
    "echo_2018": echo_2018,
    "broadcast": broadcast,
}
