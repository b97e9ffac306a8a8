module libadamw/go

go 1.21
