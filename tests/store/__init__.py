"""Tests of consentry.store and `consentry init`."""
