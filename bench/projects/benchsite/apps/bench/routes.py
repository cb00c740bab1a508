from .views import EchoView, HelloView, broadcast, echo, echo_2018, join, say

routes = {
    "/": HelloView,
    "/echo": EchoView,
}

ws_rules = {
    "echo": echo,
    "echo_2018": echo_2018,
    "broadcast": broadcast,
    "join": join,
    "say": say,
}
