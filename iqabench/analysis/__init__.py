"""What benchmarks and reports compute and draw: statistics, the decision rule, cross-run comparison, identical
sides, figures, labels, number format.

Imports nothing: a module of this subpackage is imported by its full name.
"""
