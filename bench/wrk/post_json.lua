-- POST the JSON body of the echo workload.
wrk.method = "POST"
wrk.body = '{"id":12345,"name":"tranzit bench","tags":["a","b","c"],"values":[1,2,3,4,5,6,7,8],"nested":{"ok":true,"ratio":0.5}}'
wrk.headers["Content-Type"] = "application/json"
