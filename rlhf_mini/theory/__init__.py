"""Theory chapters: preferences, utility, aggregation and learning from feedback (numpy only).

Modules:
    bradley_terry  -- maximum-likelihood Bradley-Terry strengths, Hessian and bootstrap intervals
    elo            -- online Elo ratings, i.e. stochastic gradient ascent on the same likelihood
    social_choice  -- voting rules, majority cycles and small Arrow-style counterexamples
    vnm            -- lotteries, expected utility and checks of the von Neumann-Morgenstern axioms
    bandits        -- epsilon-greedy and REINFORCE on k-armed and contextual bandits; TD(0) vs
                      Monte Carlo on the 5-state random walk
    agreement      -- Cohen's and Fleiss' kappa
    labelers       -- absolute 0-10 scores vs comparisons from miscalibrated labelers
    preference_rl  -- scalar (TAMER-style) vs pairwise (Christiano et al. 2017) feedback on a gridworld
"""
