module libadamw/examples/service

go 1.21

require libadamw/go v0.0.0

replace libadamw/go => ../../../bindings/go
