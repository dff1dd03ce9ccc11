module vango-counter

go 1.22
