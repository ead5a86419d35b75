"""Dataset formats, validation with row-numbered errors, tokenization and collators.

One module per kind of supervision, following the data: `preference` (pairs for Bradley-Terry), `stepwise`
(per-step labels for process reward models), `outcome` (one correctness label per completion) and `synthetic`
(the verifiable arithmetic data the demo builds without a download).
"""
